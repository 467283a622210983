-- GET /Users?filter=userName eq "<random preloaded userName>"
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local lib = require("lib")
local next_request

setup = lib.setup
done = lib.done

function init(args)
  lib.init_rng()
  local _, names = lib.load_data()
  next_request = lib.make_pool(function()
    local filter = lib.urlencode('userName eq "' .. names[math.random(#names)] .. '"')
    return wrk.format("GET", lib.base .. "/Users?filter=" .. filter, lib.headers)
  end)
end

function request()
  return next_request()
end
