"""Sizes the wire format and the database share, in a module that imports neither."""

# A post's text, in characters.
MAX_MESSAGE_CHARS = 4000
# A client's id for its post (resends are recognised by it), in characters.
MAX_CLIENT_ID_CHARS = 64
# A guest's id (chat/people.py makes them `guest-` and 6 hex digits), stored with their posts.
GUEST_ID_MAX_LENGTH = 32
