"""The lowest layer, shared with export/ and bench/: settings, the registry schema, the artifacts that may
load, the errors table and the catalog's names. Imports nothing else of service/."""
