//! The MCP front end (streamable HTTP).
