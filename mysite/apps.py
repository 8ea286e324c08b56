"""App configurations of the project itself."""

from django.contrib.admin.apps import AdminConfig
from django.contrib.auth.signals import user_login_failed


class SiteAdminConfig(AdminConfig):
    """django.contrib.admin, on the site whose login is throttled (mysite/admin_throttle.py)."""

    default_site = "mysite.admin_throttle.ThrottledAdminSite"

    def ready(self) -> None:
        """Autodiscover as the admin does, and count failed logins."""
        super().ready()
        # Not at the top: it imports the admin, whose models need the app registry ready.
        from mysite.admin_throttle import record_failure

        user_login_failed.connect(record_failure, dispatch_uid="mysite.admin_throttle")
