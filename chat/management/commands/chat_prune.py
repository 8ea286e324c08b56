"""`manage.py chat_prune --older-than 90d [--room NAME]`: delete old messages in batches."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat import retention


class Command(BaseCommand):
    help = (
        "Delete messages older than an age (90d, 12h, 2w), in short transactions that let the "
        "chat keep writing; clients resuming into the pruned range are told so."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--older-than", required=True, help="an age: 90d, 12h, 30m, 2w")
        parser.add_argument("--room", help="only this room (default: every room)")
        parser.add_argument(
            "--batch", type=int, default=retention.PRUNE_BATCH, help="rows per transaction"
        )
        parser.add_argument(
            "--pause",
            type=float,
            default=retention.PRUNE_PAUSE,
            help="seconds between transactions, for the chat's writers",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            age = retention.parse_age(options["older_than"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        pruned = retention.prune(
            older_than=age, room=options["room"], batch=options["batch"], pause=options["pause"]
        )
        for room in pruned:
            self.stdout.write(f"{room.room}: {room.deleted} deleted, through seq {room.through}")
        self.stdout.write(f"{sum(room.deleted for room in pruned)} message(s) deleted")
