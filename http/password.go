package http

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters of new password hashes: OWASP's minimum for argon2id
// (19 MiB of memory, 2 passes, 1 lane), a 16-byte salt and a 32-byte key.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on the parameters of a stored hash, so that a corrupt or hostile
// row cannot make Verify allocate gigabytes or run for minutes.
const (
	maxArgonMemory = 1 << 20 // KiB: 1 GiB
	maxArgonTime   = 64
	maxArgonKeyLen = 128
)

// hashSlots bounds the hashes computed at once: each holds argonMemory of
// RAM, so a burst of logins must queue rather than exhaust memory.
var hashSlots = make(chan struct{}, max(runtime.GOMAXPROCS(0), 2))

// HashPassword returns the argon2id hash of pw in the PHC string format:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//
// with salt and key in unpadded standard base64. It fails only if the
// system's random source does.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	hashSlots <- struct{}{}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	<-hashSlots
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// VerifyPassword reports whether pw matches the encoded hash, comparing in
// constant time. needsRehash reports that the hash was made with other
// parameters than HashPassword uses now, so that a caller who has just
// verified pw should store HashPassword(pw) instead. A malformed hash
// matches nothing.
func VerifyPassword(encoded, pw string) (ok, needsRehash bool) {
	p, salt, key, valid := parseArgon2id(encoded)
	if !valid {
		return false, false
	}
	hashSlots <- struct{}{}
	got := argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, uint32(len(key)))
	<-hashSlots
	if subtle.ConstantTimeCompare(got, key) != 1 {
		return false, false
	}
	current := p.memory == argonMemory && p.time == argonTime && p.threads == argonThreads &&
		len(salt) == argonSaltLen && len(key) == argonKeyLen
	return true, !current
}

type argonParams struct {
	memory, time uint32
	threads      uint8
}

// parseArgon2id parses a PHC-format argon2id hash of version 19.
func parseArgon2id(s string) (p argonParams, salt, key []byte, ok bool) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=…,t=…,p=…", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, false
	}
	var m, t, th uint64
	for i, kv := range strings.Split(parts[3], ",") {
		k, v, found := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !found || err != nil || i > 2 || k != [...]string{"m", "t", "p"}[i] {
			return p, nil, nil, false
		}
		*[...]*uint64{&m, &t, &th}[i] = n
	}
	if m < 8*th || m > maxArgonMemory || t < 1 || t > maxArgonTime || th < 1 || th > 255 {
		return p, nil, nil, false
	}
	b64 := base64.RawStdEncoding.Strict()
	salt, err1 := b64.DecodeString(parts[4])
	key, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 || len(key) > maxArgonKeyLen {
		return p, nil, nil, false
	}
	return argonParams{memory: uint32(m), time: uint32(t), threads: uint8(th)}, salt, key, true
}
