from django.apps import AppConfig


class ChatConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"

    def ready(self) -> None:
        """Connect the handlers that close sockets when someone loses access to a room."""
        from chat import access  # noqa: F401
