"""An MCP server with two tools, for the README's example (the official SDK's MCPServer).

Run by planlock over stdio as the tools file says; NOTES_DIR is the folder it keeps notes in.
"""

import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

NOTES = Path(os.environ.get("NOTES_DIR", "."))
app = MCPServer("notes", log_level="WARNING")


@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
def read_note(name: str) -> str:
    """Read a note."""
    path = NOTES / f"{name}.txt"
    return path.read_text() if path.exists() else ""


# It says it is read-only; planlock does not believe it: no effect is declared for it in
# tools.toml, so it is `undeclared` and every call needs a person.
@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
def delete_note(name: str) -> str:
    """Delete a note."""
    (NOTES / f"{name}.txt").unlink(missing_ok=True)
    return f"deleted {name}"


if __name__ == "__main__":
    app.run()
