-- Neovim's own LSP client (nvim --headless -u NONE -c 'luafile client.lua'), driven by
-- runner-cli/tests/editors.rs: the server SERVER (a JSON array) manages FILE; its
-- symbols are asked for, then again after IDLE_MS of quiet, and the client stops it.
-- Each step is a line in OUT.
local out = assert(io.open(os.getenv("OUT"), "w"))
local function say(s)
  out:write(s .. "\n")
  out:flush()
end
local exited = nil
local id = vim.lsp.start_client({
  cmd = vim.fn.json_decode(os.getenv("SERVER")),
  root_dir = vim.fn.fnamemodify(os.getenv("FILE"), ":h"),
  name = "under-test",
  on_exit = function(code, signal)
    exited = { code, signal }
  end,
})
vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("FILE")))
vim.lsp.buf_attach_client(0, id)
local initialized = vim.wait(60000, function()
  local c = vim.lsp.get_client_by_id(id)
  return exited ~= nil or (c ~= nil and c.initialized)
end, 50)
say("initialized " .. tostring(initialized and exited == nil))
say("pid " .. tostring(vim.lsp.get_client_by_id(id).rpc.pid))
local function symbols()
  local names = {}
  local res = vim.lsp.buf_request_sync(0, "textDocument/documentSymbol",
    { textDocument = vim.lsp.util.make_text_document_params() }, 10000)
  for _, r in pairs(res or {}) do
    for _, s in ipairs(r.result or {}) do
      table.insert(names, s.name)
    end
  end
  table.sort(names)
  return table.concat(names, ",")
end
-- A server may answer before it has read the file: asked again until it has.
local first = ""
vim.wait(30000, function()
  first = symbols()
  return first ~= ""
end, 100)
say("symbols " .. first)
vim.wait(tonumber(os.getenv("IDLE_MS")), function() return exited ~= nil end, 100)
say("after the idle, exited " .. vim.inspect(exited))
say("symbols " .. symbols())
vim.lsp.get_client_by_id(id).stop()
vim.wait(20000, function() return exited ~= nil end, 50)
say("exit " .. vim.inspect(exited))
out:close()
vim.cmd("qa!")
