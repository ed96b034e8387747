-- sluice quota script: the algorithms of quota/algorithm.go on one key that
-- holds every window of one key under one policy, packed. One call decides
-- (or refunds) all windows, atomically.
--
-- KEYS[1]  the state key
-- ARGV[1]  the call, packed (struct): ">BBBddd" operation (0 take, a peek
--          being a take of 0 units; 1 refund), algorithm (0 sliding, 1
--          calendar, 2 token bucket), number of windows, now in Unix
--          microseconds (-1: the server's TIME), n, and for a refund the
--          Unix second of the charge; then per window ">ddd": limit (-1
--          unlimited), length (seconds; microseconds for the token
--          bucket), and for a refund the start of the calendar window the
--          charge was made in
-- ARGV[1+i] calendar: the calendar table of window i (see calwindow)
--
-- Numbers travel packed, not as decimal strings: tonumber's strtod was a
-- tenth of a decision's cost, and a reply of one string costs Redis far
-- less than a table of integers. Reply of a take, packed as doubles:
-- allowed, now in microseconds, then per window remaining, reset, short,
-- wait and used (the units the window counts; windows without a limit
-- count too, and never reject). A refund replies now alone.
--
-- Numbers are Lua doubles: every figure here stays below 2^53 (the Go side
-- refuses token buckets whose limit times length in microseconds does not),
-- so integer arithmetic on them is exact; idiv is exact below 2^53.
--
-- State: ">BB" algorithm, windows; per window ">B" present, then
--   sliding:  ">I4" entries, entries x ">I4I4" (Unix second, units), oldest first
--   calendar: ">dd" window start, units
--   bucket:   ">ddd" debt, Unix microsecond, window microseconds
-- and for sliding a trailer: per window ">d" the units its entries count (0
-- if absent). A sliding state without the trailer (written before it
-- existed) is summed once; a script that ignores the trailer still reads
-- the windows.
-- Last, optional, ">d": the key's expiry as this script set it (PXAT), in
-- Unix milliseconds on Redis's clock. A write whose state needs no later
-- expiry keeps the key's TTL (SET KEEPTTL, which costs Redis a third of
-- SET PX: no expiry to set, no command to rewrite for replication);
-- otherwise it sets the expiry the state needs plus headroom (a sixteenth
-- of the longest window, but no more than the TTL the state needs, so that
-- a token bucket charged a unit lives at most twice its refill; none for a
-- calendar, whose expiry is the end of its window), so that the next
-- writes may keep it. A key outlives what it counts by at most that
-- headroom, and counts nothing extra meanwhile: the algorithms drop what
-- has expired. A state without the field (written by
-- an earlier script, which also drops it when it writes) gets PXAT. An
-- earlier script reads the windows of a state with the field as it reads
-- one without, the calendar and bucket ones ignoring the bytes after them,
-- the sliding ones summing the pairs once (their trailer check fails).

local MAXC = 4294967295

-- A limited sliding window keeps at most MAXWORDS pairs (quota.maxCharges):
-- a charge that needs a new pair when it holds that many first coarsens the
-- oldest ones, each moved to the end of its cell (cellend: the second
-- rounded up to a multiple of ceil(length/64) seconds, quota.cellEnd) and
-- summed with the pairs after it in the same cell, until fewer are left.
local MAXWORDS, CELLS = 128, 64

local key = KEYS[1]
local hdr = ARGV[1]
local op, alg, nw, nowus, n, atsec, hpos = struct.unpack('>BBBddd', hdr)
op = op == 1 and 'refund' or 'take'
-- OFF turns an expiry in milliseconds on the deciding clock into one on
-- Redis's: 0 at the server's clock; with the caller's (tests only) the
-- clocks' difference, plus 60 s of slack: a TTL counts on Redis's clock,
-- which a caller's simulated time may run behind, and a key that outlived
-- what it counts decides as a fresh one.
local OFF = 0
if nowus < 0 then
  local t = redis.call('TIME')
  nowus = t[1] * 1000000 + t[2]
else
  local t = redis.call('TIME')
  OFF = t[1] * 1000 + math.floor(t[2] / 1000) - math.floor(nowus / 1000) + 60000
end
local nowsec = math.floor(nowus / 1000000)

-- reply formats of a take by number of windows (sluice.MaxWindows is 4)
local REPLY = nil
if nw == 2 then
  REPLY = '>ddddddd'
elseif nw == 1 then
  REPLY = '>dddd'
else
  REPLY = '>' .. string.rep('d', 1 + 3 * nw)
end

-- Load the state; another algorithm or number of windows starts afresh.
local raw = redis.call('GET', key)

-- Sliding windows, without unpacking the state: each window's charge pairs
-- stay in raw, read at their offsets; a decision reads the header, the
-- oldest pairs it drops (each pair is dropped once), and the newest pair,
-- and writes the kept pairs back as one substring per window followed by
-- the pairs it changed or added. The running totals are kept in the
-- trailer, so that nothing sums the pairs. This runs on every decision:
-- a take makes two passes over the windows with the figures in locals and
-- creates no closure; the figures kept between passes (and for a refund)
-- live in one flat table S, window i at o = (i-1)*14, by the offsets below.
if alg == 0 and op == 'refund' then
  -- the library functions as locals: a global and a field lookup less each
  local unpack, pack, max, min, floor, sub, byte, concat, unpack_t =
    struct.unpack, struct.pack, math.max, math.min, math.floor, string.sub, string.byte, table.concat, unpack
  local LIM, LEN, PRESENT, BASE, CNT, FIRST, HI, TOTAL, TAIL, TAILN, LASTSEC =
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
  -- LIM, LEN: the window's limit and length in seconds; PRESENT: whether the
  -- state has the window; BASE: the offset in raw of its first pair; CNT:
  -- its pairs in raw; FIRST: the first that still counts; HI: the last kept
  -- as stored; TOTAL: the units counted; TAIL, TAILN: the packed pairs that
  -- follow HI and how many (a refund); LASTSEC: the second of the newest
  -- pair in TAIL.
  local S = {false, false, false, false, false, false, false, false, false, false, false, false, false, false,
    false, false, false, false, false, false, false, false, false, false, false, false, false, false,
    false, false, false, false, false, false, false, false, false, false, false, false, false, false,
    false, false, false, false, false, false, false, false, false, false, false, false, false, false}
  local stale, E = false, nil -- E: the expiry in the state, if any
  if raw then
    local a, k = unpack('>BB', raw)
    if a ~= 0 or k ~= nw then stale = true end
  end
  local pos = 3
  for i = 1, nw do
    local o, c, pr = (i - 1) * 14, 0, false
    local lim, len, _
    lim, len, _, hpos = unpack('>ddd', hdr, hpos)
    if raw and not stale then
      pr = byte(raw, pos) == 1
      pos = pos + 1
      if pr then
        c = unpack('>I4', raw, pos)
        pos = pos + 4
      end
    end
    S[o + LIM], S[o + LEN], S[o + PRESENT], S[o + BASE], S[o + CNT], S[o + FIRST], S[o + HI], S[o + TOTAL], S[o + TAILN] =
      lim, len, pr, pos, c, 1, c, 0, 0
    pos = pos + 8 * c
  end
  if raw and not stale then
    if pos + 8 * nw - 1 == #raw or pos + 8 * nw + 7 == #raw then
      for i = 1, nw do S[(i - 1) * 14 + TOTAL], pos = unpack('>d', raw, pos) end
      if pos + 7 == #raw then E = unpack('>d', raw, pos) end
    else
      -- no trailer (a state written by an earlier script): sum once
      for i = 1, nw do
        local o, t = (i - 1) * 14, 0
        for j = 1, S[o + CNT] do
          local _, c = unpack('>I4I4', raw, S[o + BASE] + 8 * (j - 1))
          t = t + c
        end
        S[o + TOTAL] = t
      end
    end
  end

  if op == 'refund' then
    if n <= 0 or not raw or stale then return struct.pack('>d', nowus) end
    -- grain returns the Unix second a sliding window counts a charge made
    -- (or refunded) at second t in: t itself in a limited window; in a
    -- window without a limit, t rounded up to a multiple of
    -- ceil(length/512) seconds, so that the window holds at most about 512
    -- pairs (quota.chargeSecond). A take does the same inline: a closure
    -- is made anew on every run of the script.
    local function grain(limit, len, t)
      if limit >= 0 then return t end
      local g = math.floor((len + 511) / 512)
      if g <= 1 then return t end
      return t + ((-t) % g)
    end

    -- cellend returns t rounded up to the end of its cell (quota.cellEnd).
    local function cellend(len, t)
      local g = math.floor((len + CELLS - 1) / CELLS)
      return t + ((-t) % g)
    end

    -- pair j (FIRST <= j <= CNT) of the window at o as stored: second, units
    local function pair(o, j)
      return unpack('>I4I4', raw, S[o + BASE] + 8 * (j - 1))
    end
    local parts = {pack('>BB', 0, nw)}
    local totals, exp, maxlen = '', 0, 0
    for i = 1, nw do
      local o = (i - 1) * 14
      do -- every window counts, limited or not
        -- normalize
        S[o + PRESENT] = true
        local cut = nowsec - S[o + LEN]
        local j, k, t = 1, S[o + CNT], S[o + TOTAL]
        while j <= k do
          local sec, c = pair(o, j)
          if sec > cut then break end
          t = t - c
          j = j + 1
        end
        S[o + FIRST], S[o + TOTAL] = j, t
        -- newest first: the pairs lo..CNT are rewritten, without those
        -- whose units fall to zero
        -- (quota.Refund) from the pair of the charge's second; if the
        -- window has none, from the pair of the end of its cell: a limited
        -- window may have coarsened the charge (see cellend)
        local f, left = j, n
        local atsec = grain(S[o + LIM], S[o + LEN], atsec)
        local lo, newc = k + 1, {}
        for try = 1, 2 do
          local found = false
          for j = k, f, -1 do
            local sec, c = pair(o, j)
            if left <= 0 or sec < atsec then break end
            if sec == atsec then
              found = true
              local d = min(c, left)
              newc[j] = c - d
              S[o + TOTAL] = S[o + TOTAL] - d
              left = left - d
            end
            lo = j
          end
          if found or S[o + LIM] < 0 then break end
          local e = cellend(S[o + LEN], atsec)
          if e == atsec then break end
          atsec, lo = e, k + 1
        end
        local tp, m = {}, 0
        for j = lo, k do
          local sec, c = pair(o, j)
          c = newc[j] or c
          if c ~= 0 then
            m = m + 1
            tp[m] = pack('>I4I4', sec, c)
            S[o + LASTSEC] = sec
          end
        end
        S[o + HI], S[o + TAIL], S[o + TAILN] = lo - 1, concat(tp), m
      end
      totals = totals .. pack('>d', S[o + TOTAL])
      if S[o + LEN] > maxlen then maxlen = S[o + LEN] end
      if not S[o + PRESENT] then
        parts[#parts + 1] = '\0'
      else
        local f, h, tn = S[o + FIRST], S[o + HI], S[o + TAILN]
        local kept = max(h - f + 1, 0)
        parts[#parts + 1] = pack('>BI4', 1, kept + tn)
        if kept > 0 then parts[#parts + 1] = sub(raw, S[o + BASE] + 8 * (f - 1), S[o + BASE] + 8 * h - 1) end
        if tn > 0 then parts[#parts + 1] = S[o + TAIL] end
        do
          local last
          if tn > 0 then last = S[o + LASTSEC] elseif kept > 0 then last = pair(o, h) end
          if last then exp = max(exp, last + S[o + LEN]) end
        end
      end
    end
    if exp * 1000 <= floor(nowus / 1000) then
      redis.call('DEL', key)
    else
      local need = exp * 1000 + OFF
      if E and need <= E then
        parts[#parts + 1] = totals .. pack('>d', E)
        redis.call('SET', key, concat(parts), 'KEEPTTL')
      else
        E = need + min(floor(maxlen * 62.5), exp * 1000 - floor(nowus / 1000))
        parts[#parts + 1] = totals .. pack('>d', E)
        redis.call('SET', key, concat(parts), 'PXAT', E)
      end
    end
    return struct.pack('>d', nowus)
  end

end

-- Sliding windows, a take (or a peek): the same reading of the state, in
-- two passes over the windows. The first drops what no longer counts and
-- checks room, the second charges, computes the figures, and writes the
-- state back: the kept pairs as one substring per window, then the pair it
-- changed or added. Every call to a C function (struct, string, math) costs
-- Redis about as much as fifteen Lua operations, and each table slot a few,
-- so this path keeps both few: the figures of window i live in the flat
-- table S at o = (i-1)*11.
if alg == 0 then
  local unpack, pack, sub, byte, unpack_t = struct.unpack, struct.pack, string.sub, string.byte, unpack
  local S
  if nw <= 2 then
    S = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
  else
    S = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
  end
  -- per window: 1 limit, 2 length, 3 offset of its first pair in raw, 4
  -- pairs in raw (k), 5 first pair that counts (j), 6 units counted, 7 8
  -- second and units of pair j, 9 10 of pair k, 11 wait (0: room). The
  -- second pass leaves the reply's figures in 6 (used), 7 (reset) and 11,
  -- and what the window writes in 3, 8, 9, 10: its kept pairs, their
  -- number plus one, and the newest pair; or, in 3 alone, its packed
  -- pairs (8 is then -1).
  local stale, E = false, nil -- E: the expiry in the state, if any
  if raw then
    local a, b = byte(raw, 1, 2)
    stale = a ~= 0 or b ~= nw
  end
  local st = raw and not stale
  local pos = 3
  if nw == 2 then
    local l1, len1, _, l2, len2 = unpack('>ddddd', hdr, hpos)
    S[1], S[2], S[12], S[13] = l1, len1, l2, len2
  else
    for i = 1, nw do
      local o, _ = (i - 1) * 11
      S[o + 1], S[o + 2], _, hpos = unpack('>ddd', hdr, hpos)
    end
  end
  for i = 1, nw do
    local o, c = (i - 1) * 11, 0
    if st then
      local pr, b1, b2, b3, b4 = byte(raw, pos, pos + 4)
      if pr == 1 then
        c = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
        pos = pos + 5
      else
        pos = pos + 1
      end
    end
    S[o + 3], S[o + 4] = pos, c
    pos = pos + 8 * c
  end
  if st then
    local m = #raw - pos - 8 * nw + 1 -- 0: the trailer ends it; 8: E follows
    if m == 8 and nw == 2 then
      S[6], S[17], E = unpack('>ddd', raw, pos)
    elseif m == 0 or m == 8 then
      for i = 1, nw do S[(i - 1) * 11 + 6], pos = unpack('>d', raw, pos) end
      if m == 8 then E = unpack('>d', raw, pos) end
    else
      -- no trailer (a state written by an earlier script): sum once
      for i = 1, nw do
        local o, t = (i - 1) * 11, 0
        for j = 1, S[o + 4] do
          local _, c = unpack('>I4I4', raw, S[o + 3] + 8 * (j - 1))
          t = t + c
        end
        S[o + 6] = t
      end
    end
  end

  -- first pass: drop what no longer counts, check room
  local allowed = true
  for i = 1, nw do
    local o = (i - 1) * 11
    local l, len, base, k, t = S[o + 1], S[o + 2], S[o + 3], S[o + 4], S[o + 6]
    local cut = nowsec - len
    local j, fsec, fc = 1, 0, 0
    while j <= k do
      fsec, fc = unpack('>I4I4', raw, base + 8 * (j - 1))
      if fsec > cut then break end
      t = t - fc
      j = j + 1
    end
    local lsec, lc = fsec, fc
    if j < k then lsec, lc = unpack('>I4I4', raw, base + 8 * (k - 1)) end
    local wait = 0
    if l < 0 then
      -- no limit: counts, never short
    elseif n > l then
      wait = -1
    elseif t + n > l then
      -- the second that frees the last unit needed (t > 0: j <= k)
      wait = -1
      local need, jj, sec, c = t + n - l, j, fsec, fc
      while true do
        need = need - c
        if need <= 0 then
          wait = sec + len
          break
        end
        jj = jj + 1
        if jj > k then break end
        sec, c = unpack('>I4I4', raw, base + 8 * (jj - 1))
      end
    end
    if wait ~= 0 then allowed = false end
    S[o + 5], S[o + 6], S[o + 7], S[o + 8], S[o + 9], S[o + 10], S[o + 11] = j, t, fsec, fc, lsec, lc, wait
  end

  -- second pass: charge, figures, and the packed state if charged
  local charged = allowed and n > 0
  local exp, common, maxlen = 0, true, 0
  for i = 1, nw do
    local o = (i - 1) * 11
    local l, len, base, k, first, t, fsec, fc, lsec, lc = S[o + 1], S[o + 2], S[o + 3], S[o + 4], S[o + 5], S[o + 6], S[o + 7], S[o + 8], S[o + 9], S[o + 10]
    -- the pairs after the charge: the coarsened ones (cw, cc: ncw), then
    -- first..hi as stored, then tn packed in tail: the newest pair with
    -- lastc units if set, and those added, of appsec, appleft units
    local hi, tail, tn, lastc, appsec, appleft = k, '', 0, nil, nowsec, 0
    local cw, cc, ncw = nil, nil, 0
    local psec, pc -- the tail is this one pair, not packed yet
    if charged then
      t = t + n
      local sec, left = nowsec, n
      if l < 0 then
        -- no limit: a step of ceil(length/512) s (quota.chargeSecond)
        local g = len + 511
        g = (g - g % 512) / 512
        if g > 1 then sec = sec + (-sec) % g end
      end
      if k >= first then
        if lsec > sec then sec = lsec end -- the clock went back
        if lsec == sec then
          local add = MAXC - lc
          if left < add then add = left end
          lastc = lc + add
          left = left - add
          hi = k - 1
          tn = 1
          if left > 0 then tail = pack('>I4I4', lsec, lastc) else psec, pc = lsec, lastc end
        end
      end
      appsec, appleft = sec, left
      if not lastc and left <= MAXC then
        psec, pc, tn = sec, left, 1
      else
        while left > 0 do
          local c = left
          if c > MAXC then c = MAXC end
          tail, tn = tail .. pack('>I4I4', sec, c), tn + 1
          left = left - c
        end
      end
      do
        if not lastc and l >= 0 and k - first + 1 >= MAXWORDS then
          -- a new pair in a full window: coarsen the oldest (quota.coarsen)
          -- into cw, cc, and keep the pairs from first on as stored
          local g = len + CELLS - 1
          g = (g - g % CELLS) / CELLS
          cw, cc = {}, {}
          local j = first
          while j <= k and ncw + k - j + 1 >= MAXWORDS do
            local sj, u = unpack('>I4I4', raw, base + 8 * (j - 1))
            local e = sj + (-sj) % g
            j = j + 1
            while j <= k do
              local s2, u2 = unpack('>I4I4', raw, base + 8 * (j - 1))
              if s2 > e or u + u2 > MAXC then break end
              u = u + u2
              j = j + 1
            end
            ncw = ncw + 1
            cw[ncw], cc[ncw] = e, u
          end
          first = j
          if first <= k then fsec, fc = unpack('>I4I4', raw, base + 8 * (first - 1)) end
        end
      end
    end
    S[o + 6] = t
    if l < 0 then
      S[o + 7] = 0
    else
      local kk = hi + tn -- index of the newest pair, counting from first
      if kk < first and ncw == 0 then
        S[o + 7] = nowsec
      elseif ncw == 0 and first <= hi and (first == kk or fc >= t - l + 1) then
        -- the common case: the oldest pair, as stored, is the one
        S[o + 7] = fsec + len
      else
        -- the pair that brings the count under the limit when it leaves,
        -- the newest at the latest
        local need = t - l + 1
        if need < 1 then need = 1 end
        local j, sec, c = first, 0, 0
        for q = 1, ncw do
          sec = cw[q]
          need = need - cc[q]
          if need <= 0 then
            j = kk + 1 -- found
            break
          end
        end
        while j <= kk do
          if j <= k then
            sec, c = unpack('>I4I4', raw, base + 8 * (j - 1))
            if j == k and lastc then c = lastc end
          else
            sec, c = appsec, appleft - (j - k - 1) * MAXC
            if c > MAXC then c = MAXC end
          end
          if j >= kk then break end
          need = need - c
          if need <= 0 then break end
          j = j + 1
        end
        S[o + 7] = sec + len
      end
    end
    if charged then
      local kept = hi - first + 1
      local ks = ''
      if kept > 0 then
        ks = sub(raw, base + 8 * (first - 1), base + 8 * hi - 1)
      else
        kept = 0
      end
      if psec and ncw == 0 then
        S[o + 3], S[o + 8], S[o + 9], S[o + 10] = ks, kept + 1, psec, pc
      else
        local cs = ''
        for q = 1, ncw do cs = cs .. pack('>I4I4', cw[q], cc[q]) end
        if psec then tail = pack('>I4I4', psec, pc) end
        S[o + 3], S[o + 8] = pack('>BI4', 1, ncw + kept + tn) .. cs .. ks .. tail, -1
        common = false
      end
      if appsec + len > exp then exp = appsec + len end
      if len > maxlen then maxlen = len end
    end
  end
  if charged and exp * 1000 <= (nowus - nowus % 1000) / 1000 then
    redis.call('DEL', key)
  elseif charged then
    local need, keep = exp * 1000 + OFF, true
    if not E or need > E then
      local h, ttl = maxlen * 62.5 - maxlen * 62.5 % 1, exp * 1000 - (nowus - nowus % 1000) / 1000
      if ttl < h then h = ttl end
      keep, E = false, need + h
    end
    -- struct.pack copies a c0 string a byte at a time, .. with memcpy:
    -- long kept pairs (a busy account's) go in by concatenation
    local v
    if nw == 2 and common and #S[3] + #S[14] < 256 then
      v = pack('>BBBI4c0I4I4BI4c0I4I4ddd', 0, 2, 1, S[8], S[3], S[9], S[10], 1, S[19], S[14], S[20], S[21], S[6], S[17], E)
    elseif nw == 2 and common then
      v = pack('>BBBI4', 0, 2, 1, S[8]) .. S[3] .. pack('>I4I4BI4', S[9], S[10], 1, S[19]) .. S[14] ..
        pack('>I4I4ddd', S[20], S[21], S[6], S[17], E)
    else
      local parts = {pack('>BB', 0, nw)}
      for i = 1, nw do
        local o = (i - 1) * 11
        if S[o + 8] < 0 then
          parts[i + 1] = S[o + 3]
        elseif #S[o + 3] < 128 then
          parts[i + 1] = pack('>BI4c0I4I4', 1, S[o + 8], S[o + 3], S[o + 9], S[o + 10])
        else
          parts[i + 1] = pack('>BI4', 1, S[o + 8]) .. S[o + 3] .. pack('>I4I4', S[o + 9], S[o + 10])
        end
      end
      for i = 1, nw do parts[nw + 1 + i] = pack('>d', S[(i - 1) * 11 + 6]) end
      parts[2 * nw + 2] = pack('>d', E)
      v = table.concat(parts)
    end
    if keep then
      redis.call('SET', key, v, 'KEEPTTL')
    else
      redis.call('SET', key, v, 'PXAT', E)
    end
  elseif stale and n > 0 then
    -- a take on state kept under another policy shape starts afresh; a
    -- peek (n = 0) never writes
    redis.call('DEL', key)
  end
  if nw == 2 then
    return pack('>ddddddd', nowus, S[6], S[7], S[11], S[17], S[18], S[22])
  end
  local out = {nowus}
  for i = 1, nw do
    local o = (i - 1) * 11
    out[3 * i - 1], out[3 * i], out[3 * i + 1] = S[o + 6], S[o + 7], S[o + 11]
  end
  return pack(REPLY, unpack_t(out))
end

-- Calendar and token bucket, a take (or a peek) whose windows all have a
-- limit: the general path's decision, made flat. That path loads the state
-- into a table per window and decides through closures made anew on every
-- run, which cost this common case 1.7 times a sliding decision; here
-- the figures of window i live in the flat table S at o = (i-1)*7: 1
-- limit, 2 length, 3 4 the state (calendar: the window's start and the
-- units counted; bucket: the debt and the Unix microsecond it was computed
-- at), 5 wait (0: room), 6 7 the units counted and the reset for the
-- reply. Having written nothing, it leaves to the general path a window
-- without a limit, a calendar zone whose offset changes near now (a table
-- of more than one offset), and a bucket counted at another window length
-- or without a limit.
if op == 'take' then
  local unpack, pack, byte, find, sub, floor, unpack_t =
    struct.unpack, struct.pack, string.byte, string.find, string.sub, math.floor, unpack
  local S
  if nw <= 2 then
    S = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
  else
    S = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
  end
  local cal, stale, E = alg == 1, false, nil -- E: the expiry in the state, if any
  if raw then
    local a, b = byte(raw, 1, 2)
    stale = a ~= alg or b ~= nw
  end
  local st, pos, hp, fast = raw and not stale, 3, hpos, true
  for i = 1, nw do
    local o, l, len, x, y, z, _ = (i - 1) * 7
    l, len, _, hp = unpack('>ddd', hdr, hp)
    if l < 0 then
      fast = false
      break
    end
    if st then
      if byte(raw, pos) == 1 then
        if cal then x, y, pos = unpack('>dd', raw, pos + 1) else x, y, z, pos = unpack('>ddd', raw, pos + 1) end
      else
        pos = pos + 1
      end
    end
    if cal then
      local c, off = ARGV[1 + i], 0
      if c ~= 'O,0' then
        if find(c, ',', 3, true) then
          fast = false
          break
        end
        off = tonumber(sub(c, 3))
      end
      local loc = nowsec + off
      local start = loc - loc % len - off
      if x ~= start then x, y = start, 0 end
    elseif x == nil then
      x, y = 0, nowus -- a full bucket
    elseif z ~= len then
      fast = false
      break
    elseif nowus > y then
      -- refill (an empty bucket of size zero never refills)
      if l == 0 then
      elseif nowus - y >= floor((x + l - 1) / l) then x = 0
      else x = x - (nowus - y) * l end
      y = nowus
    end
    S[o + 1], S[o + 2], S[o + 3], S[o + 4] = l, len, x, y
  end
  if fast then
    if st and pos + 7 == #raw then E = unpack('>d', raw, pos) end
    local allowed = true
    for i = 1, nw do
      local o = (i - 1) * 7
      local l, len, x, y, wait = S[o + 1], S[o + 2], S[o + 3], S[o + 4], 0
      if n > l then
        wait = -1
      elseif cal then
        if y + n > l then wait = x + len end
      else
        local cap, cost = l * len, n * len
        if x + cost > cap then
          if l == 0 then wait = -1 else wait = floor((x + cost - cap + l - 1) / l) end
        end
      end
      if wait ~= 0 then allowed = false end
      S[o + 5] = wait
    end
    local charged = allowed and n > 0
    local exp, maxlen = 0, 0
    for i = 1, nw do
      local o = (i - 1) * 7
      local l, len, x, y = S[o + 1], S[o + 2], S[o + 3], S[o + 4]
      local used, reset
      if cal then
        if charged then y = y + n end
        used, reset = y, nowsec
        if y > 0 then
          reset = x + len
          if reset > exp then exp = reset end
        end
      else
        if charged then x = x + n * len end
        if len > maxlen then maxlen = len end
        used, reset = floor((x + len - 1) / len), nowsec
        if x > 0 and l > 0 then
          local k = used
          if k > l then k = l end
          reset = floor((nowus + floor((x - (k - 1) * len + l - 1) / l) + 999999) / 1000000)
        end
        if x > 0 then
          local l1 = l
          if l1 < 1 then l1 = 1 end
          local e = floor((y + floor((x + l1 - 1) / l1) + 999999) / 1000000)
          if e > exp then exp = e end
        end
      end
      S[o + 3], S[o + 4], S[o + 6], S[o + 7] = x, y, used, reset
    end
    local nowms = floor(nowus / 1000)
    if charged and exp * 1000 <= nowms then
      redis.call('DEL', key)
    elseif charged then
      local need, keep = exp * 1000 + OFF, true
      if not E or need > E then
        -- headroom: a sixteenth of the longest bucket (microseconds), at
        -- most the TTL the state needs; none for a calendar
        local h = floor(maxlen / 16000)
        if exp * 1000 - nowms < h then h = exp * 1000 - nowms end
        keep, E = false, need + h
      end
      local v
      if nw == 2 and cal then
        v = pack('>BBBddBddd', 1, 2, 1, S[3], S[4], 1, S[10], S[11], E)
      elseif nw == 2 then
        v = pack('>BBBdddBdddd', 2, 2, 1, S[3], S[4], S[2], 1, S[10], S[11], S[9], E)
      else
        local parts = {pack('>BB', alg, nw)}
        for i = 1, nw do
          local o = (i - 1) * 7
          if cal then
            parts[i + 1] = pack('>Bdd', 1, S[o + 3], S[o + 4])
          else
            parts[i + 1] = pack('>Bddd', 1, S[o + 3], S[o + 4], S[o + 2])
          end
        end
        parts[nw + 2] = pack('>d', E)
        v = table.concat(parts)
      end
      if keep then
        redis.call('SET', key, v, 'KEEPTTL')
      else
        redis.call('SET', key, v, 'PXAT', E)
      end
    elseif stale and n > 0 then
      -- a take on state kept under another policy shape starts afresh; a
      -- peek (n = 0) never writes
      redis.call('DEL', key)
    end
    if nw == 2 then
      return pack('>ddddddd', nowus, S[6], S[7], S[5], S[13], S[14], S[12])
    end
    local out = {nowus}
    for i = 1, nw do
      local o = (i - 1) * 7
      out[3 * i - 1], out[3 * i], out[3 * i + 1] = S[o + 6], S[o + 7], S[o + 5]
    end
    return pack(REPLY, unpack_t(out))
  end
end

-- s[3] of an unlimited window's count under the token-bucket algorithm
-- (quota.unlimitedMark, 2^63): the units in s[1], the start of the window
-- (a multiple of its length since the epoch) in s[2].
local MARK = 9223372036854775808

local function idiv(a, b) return math.floor(a / b) end
local function cdiv(a, b) return math.floor((a + b - 1) / b) end


-- calendar table: "O,off0[,from1,off1...]": the zone offset in force from
-- each Unix second on (off0 before from1); windows are multiples of their
-- length since the local midnight. "D,m1,m2,...": the Unix seconds of
-- consecutive local midnights (day windows in a zone that changes offset).
local function calwindow(w, t)
  local nums = {}
  for x in string.gmatch(string.sub(w.cal, 3), '[^,]+') do nums[#nums + 1] = tonumber(x) end
  if string.sub(w.cal, 1, 1) == 'D' then
    if t < nums[1] or t >= nums[#nums] then
      error('sluice: the clock is outside the calendar table the gateway sent')
    end
    for j = #nums - 1, 1, -1 do
      if nums[j] <= t then return nums[j], nums[j + 1] end
    end
  end
  local off = nums[1]
  for j = 2, #nums - 1, 2 do
    if nums[j] <= t then off = nums[j + 1] end
  end
  local loc = t + off
  local s = loc - (loc % w.len) - off
  return s, s + w.len
end

-- Calendar and token bucket, general path (sliding windows never get here:
-- both their paths above return): the state is a few numbers per window,
-- loaded into tables. Another algorithm or number of windows starts afresh.
local W = {}
for i = 1, nw do
  local l, len, atstart
  l, len, atstart, hpos = struct.unpack('>ddd', hdr, hpos)
  W[i] = {limit = l, len = len, cal = ARGV[1 + i], atstart = atstart}
end
local st = {}
local stale, E = false, nil -- E: the expiry in the state, if any
if raw then
  local a, k, pos = struct.unpack('>BB', raw)
  if a ~= alg or k ~= nw then
    stale = true
  else
    for i = 1, nw do
      local present
      present, pos = struct.unpack('>B', raw, pos)
      if present == 1 then
        if alg == 1 then
          local s, c
          s, c, pos = struct.unpack('>dd', raw, pos)
          st[i] = {s, c}
        else
          local d, at, wu
          d, at, wu, pos = struct.unpack('>ddd', raw, pos)
          st[i] = {d, at, wu}
        end
      end
    end
    if pos + 7 == #raw then E = struct.unpack('>d', raw, pos) end
  end
end

local dirty = false -- a change that later calls would not redo identically

local function normalize(i)
  local w, s = W[i], st[i]
  if alg == 1 then
    w.start, w.stop = calwindow(w, nowsec)
    if s == nil or s[1] ~= w.start then st[i] = {w.start, 0} end
  else
    local wus = w.len
    if w.limit < 0 then
      local lensec = wus / 1000000
      local start = nowsec - (nowsec % lensec)
      if s == nil then
        st[i] = {0, start, MARK}
      elseif s[3] ~= MARK then
        -- a bucket whose limit was removed: its missing units count in
        -- the current window
        local used = 0
        if s[3] ~= 0 then used = cdiv(s[1], s[3]) end
        st[i] = {used, start, MARK}
        dirty = true
      elseif s[2] ~= start then
        st[i] = {0, start, MARK}
      end
      return
    end
    if s == nil then
      st[i] = {0, nowus, wus}
      return
    end
    if s[3] == MARK then
      -- a count of an unlimited window that got a limit: the units counted
      -- in the current window are the bucket's debt now
      local lensec = wus / 1000000
      local debt = 0
      if s[2] == nowsec - (nowsec % lensec) then
        debt = math.min(s[1], idiv(4503599627370496, wus)) * wus -- exact below 2^53
      end
      st[i] = {debt, nowus, wus}
      dirty = true
      return
    end
    if s[3] ~= wus and s[3] ~= 0 then
      -- debt*to/from, floored; exact while debt*to < 2^53
      local x = s[1] * wus
      if x < 9007199254740992 then s[1] = idiv(x, s[3]) else s[1] = math.floor(s[1] / s[3] * wus) end
      s[3] = wus
      dirty = true
    end
    local el = nowus - s[2]
    if el > 0 then
      local l = math.max(w.limit, 0)
      if l == 0 then
        -- an empty bucket of size zero never refills
      elseif el >= cdiv(s[1], l) then
        s[1] = 0
      else
        s[1] = s[1] - el * l
      end
      s[2] = nowus
    end
  end
end

-- room returns whether n units fit, and if not the wait: -1 for never; the
-- Unix second of the retry (calendar); microseconds (bucket).
local function room(i)
  local w, s = W[i], st[i]
  local l = w.limit
  if n > l then return false, -1 end
  if alg == 1 then
    if s[2] + n <= l then return true, 0 end
    return false, w.stop
  else
    local wus = s[3]
    local cap, cost = l * wus, n * wus
    if s[1] + cost <= cap then return true, 0 end
    if l == 0 then return false, -1 end
    return false, cdiv(s[1] + cost - cap, l)
  end
end

local function charge(i)
  local s = st[i]
  if alg == 1 then
    s[2] = s[2] + n
  elseif s[3] == MARK then
    s[1] = s[1] + n
  else
    s[1] = s[1] + n * s[3]
  end
end

-- used returns the units the window counts: for a token bucket, the whole
-- units missing from a full bucket (an unlimited one: its count).
local function used(i)
  local s = st[i]
  if alg == 1 then return s[2] end
  if s[3] == MARK then return s[1] end
  return cdiv(s[1], s[3])
end

-- status returns the units left and the Unix second they next grow at.
local function status(i)
  local w, s = W[i], st[i]
  local l = w.limit
  if alg == 1 then
    if s[2] == 0 then return l, nowsec end
    return math.max(l - s[2], 0), w.stop
  else
    local debt, wus = s[1], s[3]
    if debt == 0 or l == 0 then return l, nowsec end
    local missing = cdiv(debt, wus)
    local k = math.min(missing, l)
    local waitus = cdiv(debt - (k - 1) * wus, l)
    return math.max(l - missing, 0), cdiv(nowus + waitus, 1000000)
  end
end

-- write stores the state with a TTL at its expiry (quota.Expiry), or
-- deletes it if nothing counts any more.
local function write()
  local parts = {struct.pack('>BB', alg, nw)}
  local exp, maxlen = 0, 0
  for i = 1, nw do
    local w, s = W[i], st[i]
    if alg == 2 and w.len > maxlen then maxlen = w.len end
    if s == nil then
      parts[#parts + 1] = struct.pack('>B', 0)
    elseif alg == 1 then
      parts[#parts + 1] = struct.pack('>Bdd', 1, s[1], s[2])
      if s[2] > 0 then exp = math.max(exp, w.stop) end
    else
      parts[#parts + 1] = struct.pack('>Bddd', 1, s[1], s[2], s[3])
      if s[3] == MARK then
        if s[1] > 0 then exp = math.max(exp, s[2] + w.len / 1000000) end
      elseif s[1] > 0 then
        local l = math.max(w.limit, 1)
        exp = math.max(exp, idiv(s[2] + cdiv(s[1], l) + 999999, 1000000))
      end
    end
  end
  if exp * 1000 <= idiv(nowus, 1000) then
    redis.call('DEL', key)
    return
  end
  local need = exp * 1000 + OFF
  if E and need <= E then
    parts[#parts + 1] = struct.pack('>d', E)
    redis.call('SET', key, table.concat(parts), 'KEEPTTL')
  else
    -- bucket lengths are in microseconds
    E = need + math.min(idiv(maxlen, 16000), exp * 1000 - idiv(nowus, 1000))
    parts[#parts + 1] = struct.pack('>d', E)
    redis.call('SET', key, table.concat(parts), 'PXAT', E)
  end
end

if op == 'refund' then
  if n <= 0 or not raw or stale then return struct.pack('>d', nowus) end
  for i = 1, nw do
    local w = W[i]
    do -- every window counts, limited or not
      normalize(i)
      local s = st[i]
      if alg == 1 then
        if w.atstart == s[1] then s[2] = s[2] - math.min(s[2], n) end
      elseif s[3] == MARK then
        if atsec - (atsec % (w.len / 1000000)) == s[2] then s[1] = s[1] - math.min(s[1], n) end
      else
        s[1] = s[1] - math.min(s[1], n * s[3])
      end
    end
  end
  write()
  return struct.pack('>d', nowus)
end

-- take
local allowed = 1
local short, waits = {}, {}
for i = 1, nw do
  normalize(i) -- every window counts; only limited ones reject
  if W[i].limit >= 0 then
    local ok, wait = room(i)
    if not ok then
      allowed = 0
      short[i], waits[i] = 1, wait
    end
  end
end
local charged = allowed == 1 and n > 0
if charged then
  for i = 1, nw do
    charge(i)
  end
end
-- the reply: now, then per window used, reset and wait (0: room)
local out = {nowus}
for i = 1, nw do
  local reset = 0
  if W[i].limit >= 0 then
    local _
    _, reset = status(i)
  end
  out[#out + 1] = used(i)
  out[#out + 1] = reset
  out[#out + 1] = waits[i] or 0
end
out = struct.pack(REPLY, unpack(out))
-- A peek (n = 0) never writes: not a rescaled bucket (a peek under another
-- window length), not a state kept under another policy shape, which the
-- next take decides about.
if charged or (dirty and n > 0) then
  write()
elseif stale and n > 0 then
  redis.call('DEL', key)
end
return out
