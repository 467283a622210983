-- POST /Users with an Entra-shaped user; userName unique per request:
-- run id (random per wrk run) + thread id + per-thread counter.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local lib = require("lib")
local n = 0

setup = lib.setup
done = lib.done

function init(args)
  lib.init_rng()
end

function request()
  n = n + 1
  local key = lib.run_id .. "-" .. tid .. "-" .. n
  local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User",' ..
    '"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],' ..
    '"externalId":"ext-' .. key .. '",' ..
    '"userName":"c-' .. key .. '@example.com",' ..
    '"active":true,' ..
    '"displayName":"Created ' .. key .. '",' ..
    '"name":{"givenName":"Created","familyName":"' .. key .. '","formatted":"Created ' .. key .. '"},' ..
    '"emails":[{"primary":true,"type":"work","value":"c-' .. key .. '@example.com"}],' ..
    '"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Engineering","employeeNumber":"' .. n .. '"}}'
  return wrk.format("POST", lib.base .. "/Users", lib.body_headers, body)
end
