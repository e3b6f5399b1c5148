"""The camera feature's pure core: motion detection and its event schema."""
