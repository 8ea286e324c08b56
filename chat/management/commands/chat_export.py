"""`manage.py chat_export ROOM [-o FILE]`: a room's posts as JSON lines (chat/retention.py)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat import retention
from chat.models import Room


class Command(BaseCommand):
    help = "Write a room's posts, oldest first, one JSON object per line: seq, author, time, text."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("room")
        parser.add_argument("-o", "--output", help="a file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not Room.objects.filter(name=options["room"]).exists():
            raise CommandError(f"no room named {options['room']!r}")
        lines = retention.export_room(options["room"])
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as output:
                for line in lines:
                    output.write(line + "\n")
        else:
            for line in lines:
                self.stdout.write(line)
