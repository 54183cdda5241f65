"""convzoo's client: `convzoo classify` sends folders of photos to a running service (docs/client.md)."""
