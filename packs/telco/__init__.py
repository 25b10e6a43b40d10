"""The telco pack: a broadband and mobile provider, served by its own MCP server over its own data."""
