-- mod_bench_profile: a sampling profiler of Prosody's Lua code, for the
-- groupchat benchmark only (tests/bench/run-groupchat.sh with
-- SEALROOM_BENCH_LUAPROF=1 loads it). perf sees nothing but the Lua VM in
-- Prosody, so this attributes CPU time to Lua functions instead.
--
-- Every bench_profile_interval VM instructions (in the main thread and in
-- every coroutine: Prosody handles stanzas in util.async threads) it charges the CPU time
-- since the previous sample to the current Lua stack: to the innermost
-- function (self) and to every distinct function on the stack (total). C
-- functions' time lands on the Lua function that called them, which is what
-- we want to see (string.gsub in serialisation, expat in parsing). The table
-- is written to bench_profile_file when Prosody stops.

module:set_global();

local getinfo, sethook, clock = debug.getinfo, debug.sethook, os.clock;
local interval = module:get_option_number("bench_profile_interval", 1000);
local out_path = module:get_option_string("bench_profile_file",
	prosody.paths.data .. "/bench_profile.txt");
local max_depth = 40;

local self_time, total_time, samples = {}, {}, 0;
local last = clock();
local names = setmetatable({}, { __mode = "k" });

local function name_of(info)
	local n = names[info.func];
	if not n then
		n = ("%s:%d %s"):format(info.short_src, info.linedefined, info.name or "?");
		names[info.func] = n;
	end
	return n;
end

local function sample()
	local dt = clock() - last;
	samples = samples + 1;
	local seen = {};
	local leaf = true;
	for level = 2, max_depth do
		local info = getinfo(level, "Sfn");
		if not info then break; end
		if info.what ~= "C" then
			local n = name_of(info);
			if leaf then
				self_time[n] = (self_time[n] or 0) + dt;
				leaf = false;
			end
			if not seen[n] then
				seen[n] = true;
				total_time[n] = (total_time[n] or 0) + dt;
			end
		end
	end
	-- Restart the clock after the stack walk, so its own cost is not charged.
	last = clock();
end

-- Modules load inside a coroutine: hook the main thread (registry slot 1),
-- where the event loop runs and whose hook util.async copies into the
-- threads it makes, and this one.
sethook(debug.getregistry()[1], sample, "", interval);
sethook(sample, "", interval);
local co_create = coroutine.create;
function coroutine.create(f) -- luacheck: ignore 122
	local co = co_create(f);
	sethook(co, sample, "", interval);
	return co;
end

local function top(t, n)
	local rows = {};
	for k, v in pairs(t) do rows[#rows + 1] = { k, v }; end
	table.sort(rows, function (a, b) return a[2] > b[2]; end);
	local sum = 0;
	for _, r in ipairs(rows) do sum = sum + r[2]; end
	return rows, sum;
end

local function write_report()
	local f = io.open(out_path, "w");
	if not f then return; end
	local rows_self, sum = top(self_time);
	local rows_total = top(total_time);
	f:write(("samples %d, %.2f s CPU sampled (every %d VM instructions)\n\n"):format(samples, sum, interval));
	f:write("self time (innermost Lua function, C calls included):\n");
	for i = 1, math.min(40, #rows_self) do
		f:write(("%6.2f%%  %8.3f s  %s\n"):format(100 * rows_self[i][2] / sum, rows_self[i][2], rows_self[i][1]));
	end
	f:write("\ntotal time (function anywhere on the stack):\n");
	for i = 1, math.min(60, #rows_total) do
		f:write(("%6.2f%%  %8.3f s  %s\n"):format(100 * rows_total[i][2] / sum, rows_total[i][2], rows_total[i][1]));
	end
	f:close();
end

module:hook_global("server-stopping", write_report);
module:log("info", "profiling every %d VM instructions into %s", interval, out_path);
