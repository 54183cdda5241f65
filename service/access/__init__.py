"""Who is calling: API keys, their scopes and quotas, the guard of every request (docs/auth.md)."""
