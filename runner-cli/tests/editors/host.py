"""An LSP host as an agent writes one, with pytest-lsp's client (pygls), driven by
runner-cli/tests/editors.rs: for each case of LSP_CASES (a JSON list), the server
`cmd` is started, initialized with the client capabilities VS Code declares (the
host's own pid as processId), opens `file`, must list the `expect`ed symbols, again
after `idle` seconds of quiet, and must exit 0 after `shutdown` and `exit`."""

import asyncio
import json
import os
import pathlib

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, client_capabilities

CASES = json.loads(os.environ["LSP_CASES"])


def names(result):
    found = set()

    def walk(items):
        for symbol in items or []:
            found.add(symbol.name)
            walk(getattr(symbol, "children", None))

    walk(result)
    return found


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_a_session(case):
    client = await ClientServerConfig(server_command=case["cmd"]).start()

    # VS Code's capabilities include dynamic registration; the servers use it.
    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register_capability(ls, params):
        return None

    try:
        path = pathlib.Path(case["file"])
        root = path.parent.as_uri()
        await asyncio.wait_for(
            client.initialize_session(
                types.InitializeParams(
                    capabilities=client_capabilities("visual-studio-code"),
                    root_uri=root,
                    workspace_folders=[types.WorkspaceFolder(uri=root, name="ws")],
                    initialization_options=case.get("init_options"),
                )
            ),
            120,
        )
        uri = path.as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri,
                    language_id=case["language"],
                    version=1,
                    text=path.read_text(),
                )
            )
        )

        async def symbols():
            asked = client.text_document_document_symbol_async(
                types.DocumentSymbolParams(
                    text_document=types.TextDocumentIdentifier(uri=uri)
                )
            )
            return names(await asyncio.wait_for(asked, 60))

        # A server may answer before it has read the file: asked again until it has.
        for _ in range(300):
            first = await symbols()
            if set(case["expect"]) <= first:
                break
            await asyncio.sleep(0.1)
        assert set(case["expect"]) <= first, first
        await asyncio.sleep(case["idle"])
        assert await symbols() == first
        await asyncio.wait_for(client.shutdown_session(), 30)
        assert client._server.returncode == 0, client._server.returncode
    finally:
        await client.stop()
