"""The gateway's answer cache: exact and semantic layers, near-miss guards, warming.

`service` is the API the gateway uses; docs/semantic-cache.md explains the design and its numbers.
"""
