package gctune_test

import (
	"os"
	"testing"
)

// unsetenv removes name from the environment for the test (t.Setenv first
// records its value, which the test's cleanup restores).
func unsetenv(t *testing.T, name string) {
	t.Helper()
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}
