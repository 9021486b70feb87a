-- wrk script: replay pre-signed Plivo callbacks, each at most once unless the file runs out.
-- Usage: wrk ... -s bench/signed.lua URL -- REQUESTS_FILE THREADS
-- Each line of REQUESTS_FILE is "path<TAB>nonce<TAB>signature<TAB>body" (bench/workload.py).
-- Thread k takes lines k, k+THREADS, ... so no two threads send the same nonce. done() prints one
-- "BENCH_RESULT {json}" line that bench/loadgen.py reads.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   local path, nthreads = args[1], tonumber(args[2])
   requests = {}
   local i = 0
   for line in io.lines(path) do
      if i % nthreads == id then
         local p, nonce, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         requests[#requests + 1] = wrk.format("POST", p, {
            ["Content-Type"] = "application/x-www-form-urlencoded",
            ["X-Plivo-Signature-V3-Nonce"] = nonce,
            ["X-Plivo-Signature-V3"] = sig,
         }, body)
      end
      i = i + 1
   end
   available = #requests
   index = 0
   sent = 0
   wrapped = 0
   non2xx = 0
   last_bad = 0
end

function request()
   index = index + 1
   if index > available then
      index = 1
      wrapped = wrapped + 1
   end
   sent = sent + 1
   return requests[index]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      last_bad = status
   end
end

function done(summary, latency, requests)
   local non2xx_total, wrapped_total, available_total, sent_total, bad = 0, 0, 0, 0, 0
   for _, t in ipairs(threads) do
      non2xx_total = non2xx_total + t:get("non2xx")
      wrapped_total = wrapped_total + t:get("wrapped")
      available_total = available_total + t:get("available")
      sent_total = sent_total + t:get("sent")
      if t:get("last_bad") ~= 0 then bad = t:get("last_bad") end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %.1f, "p99_us": %.1f, ' ..
      '"non2xx": %d, "last_bad_status": %d, "wrapped": %d, "available": %d, "sent": %d, ' ..
      '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      non2xx_total, bad, wrapped_total, available_total, sent_total,
      e.connect, e.read, e.write, e.timeout))
end
