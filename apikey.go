package sluice

import (
	"crypto/rand"
	"crypto/sha256"
	"hash/crc32"
	"strconv"
)

// API keys look like "slk_" + 12 characters of lookup ID + 30 characters of
// secret + 6 characters of CRC-32 checksum, all base62. The lookup ID finds
// the stored key without a scan; the secret carries 178 bits of entropy; the
// checksum lets a typo or a string that was never a key be refused without a
// database lookup (and lets secret scanners recognise leaked keys).
const (
	APIKeyPrefix = "slk_"
	apiKeyIDLen  = 12
	apiKeySecLen = 30
	apiKeySumLen = 6
	apiKeyLen    = len(APIKeyPrefix) + apiKeyIDLen + apiKeySecLen + apiKeySumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewAPIKey returns a new random key, its lookup ID and the SHA-256 hash that
// is stored in its place.
func NewAPIKey() (key, id string, hash []byte) {
	b := make([]byte, 0, apiKeyLen)
	b = append(b, APIKeyPrefix...)
	b = append(b, RandomString(apiKeyIDLen+apiKeySecLen)...)
	b = appendBase62(b, uint64(crc32.ChecksumIEEE(b)), apiKeySumLen)
	key = string(b)
	h := sha256.Sum256(b)
	return key, key[len(APIKeyPrefix) : len(APIKeyPrefix)+apiKeyIDLen], h[:]
}

// ParseAPIKey checks the form and checksum of key and returns its lookup ID
// and hash. ok is false for anything that is not a well-formed key.
func ParseAPIKey(key string) (id string, hash []byte, ok bool) {
	if len(key) != apiKeyLen || key[:len(APIKeyPrefix)] != APIKeyPrefix {
		return "", nil, false
	}
	body := key[:apiKeyLen-apiKeySumLen]
	for i := len(APIKeyPrefix); i < len(key); i++ {
		if !isBase62(key[i]) {
			return "", nil, false
		}
	}
	var sum [apiKeySumLen]byte
	if string(appendBase62(sum[:0], uint64(crc32.ChecksumIEEE([]byte(body))), apiKeySumLen)) != key[len(body):] {
		return "", nil, false
	}
	h := sha256.Sum256([]byte(key))
	return key[len(APIKeyPrefix) : len(APIKeyPrefix)+apiKeyIDLen], h[:], true
}

// HashToken returns the SHA-256 of a secret token (session, reset or link
// token), which is what gets stored.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// RandomString returns n uniformly random base62 characters from
// crypto/rand (5.95 bits each).
func RandomString(n int) string {
	b := make([]byte, n)
	buf := make([]byte, 2*n)
	for i := 0; i < n; {
		rand.Read(buf) // never fails (crypto/rand)
		for _, c := range buf {
			// 248 = 4*62: rejecting bytes above keeps the draw uniform.
			if c < 248 && i < n {
				b[i] = base62[c%62]
				i++
			}
		}
	}
	return string(b)
}

func appendBase62(b []byte, v uint64, width int) []byte {
	start := len(b)
	for range width {
		b = append(b, base62[v%62])
		v /= 62
	}
	for i, j := start, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return b
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// AccountQuotaKey is the quota key of the account with the ID.
func AccountQuotaKey(id int64) string { return "{acct:" + strconv.FormatInt(id, 10) + "}" }
