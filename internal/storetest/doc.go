// Package storetest holds the conformance suites that every implementation
// of sluice's store interfaces must pass: RunQuotaStore for sluice.QuotaStore,
// RunAccountService for sluice.AccountService and RunIdempotencyStore for
// sluice.IdempotencyStore.
package storetest
