"""The project's settings with the channel layer the tutorial configures (part 2).

The `tutorial-rcl` target runs the tutorial's app on these, so it measures the tutorial as
written (channels-redis' RedisChannelLayer) whatever layer the project has moved to.
"""

import os

from mysite.settings import *  # noqa: F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
    },
}
