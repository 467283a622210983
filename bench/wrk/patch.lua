-- PATCH /Users/{id}, Entra style: capitalised "Replace" of displayName,
-- random preloaded id, a distinct value per pooled request.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local lib = require("lib")
local next_request

setup = lib.setup
done = lib.done

function init(args)
  lib.init_rng()
  local ids = lib.load_data()
  next_request = lib.make_pool(function(i)
    local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],' ..
      '"Operations":[{"op":"Replace","path":"displayName","value":' ..
      lib.json_string("Patched " .. lib.run_id .. " " .. tid .. " " .. i) .. '}]}'
    return wrk.format("PATCH", lib.base .. "/Users/" .. ids[math.random(#ids)], lib.body_headers, body)
  end)
end

function request()
  return next_request()
end
