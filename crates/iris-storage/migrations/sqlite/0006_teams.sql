-- Teams created at run time (through the API, MCP, the CLI): their
-- configuration as the config file would have it (JSON, camelCase keys).
-- Teams of the config file are not stored here.
CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
