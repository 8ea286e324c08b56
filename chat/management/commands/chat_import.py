"""`manage.py chat_import ROOM [FILE]`: read back what chat_export wrote (chat/retention.py)."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat import retention


class Command(BaseCommand):
    help = "Store the JSON lines of chat_export in an empty (or new) room, keeping seq and time."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("room")
        parser.add_argument("file", nargs="?", help="the export (default: standard input)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["file"]:
                with open(options["file"], encoding="utf-8") as lines:
                    count = retention.import_room(options["room"], lines)
            else:
                count = retention.import_room(options["room"], sys.stdin)
        except retention.ImportRefused as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{count} message(s) imported into {options['room']}")
