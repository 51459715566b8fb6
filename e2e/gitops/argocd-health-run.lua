-- Runs an Argo CD health script on one object, the way Argo CD does: the object (JSON, decoded)
-- as the global `obj`, the script's returned table read as hs.status / hs.message.
--   lua5.4 argocd-health-run.lua HEALTH.lua OBJECT.json    (lua5.1 too: Argo's dialect)
-- Prints `<status> <message>`.
local cjson = require("cjson")
local script, file = arg[1], arg[2]

local f = assert(io.open(file, "r"))
local text = f:read("*a")
f:close()

-- Argo hands the script JSON nulls as nil; cjson decodes them to a sentinel.
local function strip_nulls(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if x ~= cjson.null then
      out[k] = strip_nulls(x)
    end
  end
  return out
end

-- Only what Argo opens for health scripts: no io, no os.
local env = {
  obj = strip_nulls(cjson.decode(text)),
  pairs = pairs, ipairs = ipairs, next = next, type = type, tostring = tostring,
  tonumber = tonumber, error = error, pcall = pcall, select = select, unpack = unpack,
  string = string, table = table, math = math,
}
local chunk
if setfenv then
  chunk = assert(loadfile(script))
  setfenv(chunk, env)
else
  chunk = assert(loadfile(script, "t", env))
end
local hs = chunk()
assert(type(hs) == "table", "the script returned " .. type(hs) .. ", not a table")
print(tostring(hs.status) .. " " .. tostring(hs.message))
