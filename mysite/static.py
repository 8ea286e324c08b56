"""Static files: hashed and compressed once `collectstatic` has run, plain names before."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedStaticFiles(CompressedManifestStaticFilesStorage):
    """WhiteNoise's manifest storage, that still works before (or without) `collectstatic`.

    After `collectstatic` pages link `chat/chat.3f2a9c….css`: WhiteNoise serves those names
    gzip- or brotli-compressed with a year's `max-age` and `immutable`, and a deploy that
    changes a file changes its name. Before it (a fresh clone, `make run`, the tests) there is
    no manifest: pages link the plain names, which WhiteNoise serves from the apps
    (WHITENOISE_USE_FINDERS) with a short `max-age`, as they always were.
    """

    def stored_name(self, name: str) -> str:
        """The hashed name from the manifest; the plain name when the manifest lacks it."""
        if not self.hashed_files:
            return name
        try:
            return super().stored_name(name)
        except ValueError:  # a file added since the last collectstatic: served by the finders
            return name
