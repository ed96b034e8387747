package imagegen_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: a request
// that outlives its timeout, a connection that is never closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
