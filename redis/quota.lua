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

-- Calendar and token bucket, a take (a peek being a take of 0 units) or a
-- refund: the state is a few numbers per window, decided with locals and
-- one flat table, without unpacking into a table per window or closures
-- (as an earlier build's general path did, at 1.7 times the instructions
-- of a sliding decision). The figures of window i live in S at
-- o = (i-1)*8: 1 limit (-1: none), 2 length (calendar: seconds; bucket:
-- microseconds), 3 4 5 the state (calendar: the window's start, the units
-- counted, and the window's end; bucket: the debt, the Unix microsecond it
-- was computed at, and the window length it counts in, or MARK), 6 wait
-- (0: room), 7 8 the units counted and the reset for the reply.
--
-- A token-bucket window without a limit counts its units in fixed windows
-- of its length: x the units, y the window's start (a multiple of its
-- length since the epoch), z MARK (quota.unlimitedMark, 2^63).
--
-- A calendar table is "O,off0[,from1,off1...]": the zone offset in force
-- from each Unix second on (off0 before from1), windows being multiples of
-- their length since the local midnight; or "D,m1,m2,...": the Unix
-- seconds of consecutive local midnights (day windows in a zone that
-- changes offset). The common "O,<off>" is read without a table.
local MARK = 9223372036854775808
local unpack, pack, byte, find, sub, floor, min, unpack_t =
  struct.unpack, struct.pack, string.byte, string.find, string.sub, math.floor, math.min, unpack
local refund, cal = op == 'refund', alg == 1
local stale, E, dirty = false, nil, false -- E: the expiry in the state, if any
if raw then
  local a, b = byte(raw, 1, 2)
  stale = a ~= alg or b ~= nw
end
if refund and (n <= 0 or not raw or stale) then return pack('>d', nowus) end
local S
if nw <= 2 then
  S = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
else
  S = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
end
-- Load and normalize every window (limited or not: all count), and for a
-- refund give the units back.
local st, pos, hp = raw and not stale, 3, hpos
for i = 1, nw do
  local o, l, len, atstart, x, y, z = (i - 1) * 8
  l, len, atstart, hp = unpack('>ddd', hdr, hp)
  if st then
    if byte(raw, pos) == 1 then
      if cal then x, y, pos = unpack('>dd', raw, pos + 1) else x, y, z, pos = unpack('>ddd', raw, pos + 1) end
    else
      pos = pos + 1
    end
  end
  if cal then
    local c, off, start = ARGV[1 + i], 0, nil
    if c == 'O,0' then
    elseif byte(c, 1) == 68 or find(c, ',', 3, true) then -- a table
      local m = {}
      for v in string.gmatch(sub(c, 3), '[^,]+') do m[#m + 1] = tonumber(v) end
      if byte(c, 1) == 68 then -- 'D': the midnights around now
        if nowsec < m[1] or nowsec >= m[#m] then
          error('sluice: the clock is outside the calendar table the gateway sent')
        end
        for j = #m - 1, 1, -1 do
          if m[j] <= nowsec then
            start, z = m[j], m[j + 1]
            break
          end
        end
      else -- the offset in force now
        off = m[1]
        for j = 2, #m - 1, 2 do
          if m[j] <= nowsec then off = m[j + 1] end
        end
      end
    else
      off = tonumber(sub(c, 3))
    end
    if not start then
      local loc = nowsec + off
      start = loc - loc % len - off
      z = start + len
    end
    if x ~= start then x, y = start, 0 end
    if refund and atstart == x then y = y - min(y, n) end
  elseif l < 0 then
    local lensec = len / 1000000
    local start = nowsec - nowsec % lensec
    if x == nil then
      x, y, z = 0, start, MARK
    elseif z ~= MARK then
      -- a bucket whose limit was removed: its missing units count in the
      -- current window
      local u = 0
      if z ~= 0 then u = floor((x + z - 1) / z) end
      x, y, z, dirty = u, start, MARK, true
    elseif y ~= start then
      x, y = 0, start
    end
    if refund and atsec - atsec % lensec == y then x = x - min(x, n) end
  else
    if x == nil then
      x, y, z = 0, nowus, len -- a full bucket
    elseif z == MARK then
      -- the count of a window without a limit that got one: the units
      -- counted in the current window are the bucket's debt now (exact
      -- below 2^53)
      local lensec, debt = len / 1000000, 0
      if y == nowsec - nowsec % lensec then debt = min(x, floor(4503599627370496 / len)) * len end
      x, y, z, dirty = debt, nowus, len, true
    else
      if z ~= len and z ~= 0 then
        -- a bucket counted at another window length: debt*to/from,
        -- floored; exact while debt*to < 2^53
        local d = x * len
        if d < 9007199254740992 then x = floor(d / z) else x = floor(x / z * len) end
        z, dirty = len, true
      end
      if nowus > y then
        -- refill (an empty bucket of size zero never refills)
        if l == 0 then
        elseif nowus - y >= floor((x + l - 1) / l) then x = 0
        else x = x - (nowus - y) * l end
        y = nowus
      end
    end
    if refund then x = x - min(x, n * z) end
  end
  S[o + 1], S[o + 2], S[o + 3], S[o + 4], S[o + 5] = l, len, x, y, z
end
if st and pos + 7 == #raw then E = unpack('>d', raw, pos) end

-- A take: room in every limited window.
local charged = false
if not refund then
  local allowed = true
  for i = 1, nw do
    local o = (i - 1) * 8
    local l, x, y, z, wait = S[o + 1], S[o + 3], S[o + 4], S[o + 5], 0
    if l < 0 then
    elseif n > l then
      wait = -1
    elseif cal then
      if y + n > l then wait = z end
    else
      local cap, cost = l * z, n * z
      if x + cost > cap then
        if l == 0 then wait = -1 else wait = floor((x + cost - cap + l - 1) / l) end
      end
    end
    if wait ~= 0 then allowed = false end
    S[o + 6] = wait
  end
  charged = allowed and n > 0
end
-- The charge, the reply's figures, and the expiry the state needs (the
-- Unix second after which it counts nothing: quota.Expiry).
local exp, maxlen = 0, 0
for i = 1, nw do
  local o = (i - 1) * 8
  local l, len, x, y, z = S[o + 1], S[o + 2], S[o + 3], S[o + 4], S[o + 5]
  local used, reset
  if cal then
    if charged then y = y + n end
    used, reset = y, nowsec
    if y > 0 then
      reset = z
      if z > exp then exp = z end
    end
  else
    if len > maxlen then maxlen = len end
    if z == MARK then
      if charged then x = x + n end
      used = x
      if x > 0 and y + len / 1000000 > exp then exp = y + len / 1000000 end
    else
      if charged then x = x + n * z end
      used, reset = floor((x + z - 1) / z), nowsec
      if x > 0 then
        local l1 = l
        if l1 < 1 then l1 = 1 end
        local e = floor((y + floor((x + l1 - 1) / l1) + 999999) / 1000000)
        if e > exp then exp = e end
        if l > 0 then
          local k = used
          if k > l then k = l end
          reset = floor((nowus + floor((x - (k - 1) * z + l - 1) / l) + 999999) / 1000000)
        end
      end
    end
  end
  if l < 0 then reset = 0 end
  S[o + 3], S[o + 4], S[o + 7], S[o + 8] = x, y, used, reset
end

-- Write the state with a TTL at its expiry, or delete it if nothing
-- counts any more: after a charge, a refund, or a take whose state changed
-- in a way a later call would not redo identically. A peek (n = 0) never
-- writes: not a rescaled bucket, not a state kept under another policy
-- shape, which the next take decides about.
if charged or refund or (dirty and n > 0) then
  local nowms = floor(nowus / 1000)
  if exp * 1000 <= nowms then
    redis.call('DEL', key)
  else
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
      v = pack('>BBBddBddd', 1, 2, 1, S[3], S[4], 1, S[11], S[12], E)
    elseif nw == 2 then
      v = pack('>BBBdddBdddd', 2, 2, 1, S[3], S[4], S[5], 1, S[11], S[12], S[13], E)
    else
      local parts = {pack('>BB', alg, nw)}
      for i = 1, nw do
        local o = (i - 1) * 8
        if cal then
          parts[i + 1] = pack('>Bdd', 1, S[o + 3], S[o + 4])
        else
          parts[i + 1] = pack('>Bddd', 1, S[o + 3], S[o + 4], S[o + 5])
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
  end
elseif stale and n > 0 then
  -- a take on state kept under another policy shape starts afresh
  redis.call('DEL', key)
end
if refund then return pack('>d', nowus) end
-- the reply: now, then per window used, reset and wait (0: room)
if nw == 2 then
  return pack('>ddddddd', nowus, S[7], S[8], S[6], S[15], S[16], S[14])
end
local out = {nowus}
for i = 1, nw do
  local o = (i - 1) * 8
  out[3 * i - 1], out[3 * i], out[3 * i + 1] = S[o + 7], S[o + 8], S[o + 6]
end
return pack(REPLY, unpack_t(out))
