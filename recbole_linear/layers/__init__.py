"""Building blocks shared by the plugin's models.

Each fast layer has a slow, obvious reference form next to it; the references are used
only by the tests, to keep the fast forms honest.
"""
