-- GET /Users/{id} with a random preloaded id per request.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local lib = require("lib")
local next_request

setup = lib.setup
done = lib.done

function init(args)
  lib.init_rng()
  local ids = lib.load_data()
  next_request = lib.make_pool(function()
    return wrk.format("GET", lib.base .. "/Users/" .. ids[math.random(#ids)], lib.headers)
  end)
end

function request()
  return next_request()
end
