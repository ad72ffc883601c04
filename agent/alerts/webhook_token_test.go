package alerts

import (
	"crypto/sha256"
	"testing"
)

// The token comparison: SHA-256 digests compared with crypto/subtle, so the time depends on
// neither the token's bytes nor the lengths. A prefix, an extension or a token differing in its
// last byte do not match.
func TestDigestMatches(t *testing.T) {
	const token = "0123456789abcdef0123"
	want := sha256.Sum256([]byte(token))
	for got, ok := range map[string]bool{
		token:             true,
		token[:19]:        false,
		token + "4":       false,
		"":                false,
		token[:19] + "4":  false,
		"Bearer " + token: false,
	} {
		if digestMatches(&want, got) != ok {
			t.Errorf("digestMatches(%q) = %v", got, !ok)
		}
	}
}
