// Package storetest holds the conformance suites that every implementation
// of sluice's store interfaces must pass: RunQuotaStore for sluice.QuotaStore,
// RunAccountService for sluice.AccountService, RunAuditLog for an account
// store that is also a sluice.AuditLog, RunIdempotencyStore for
// sluice.IdempotencyStore and RunUsageStore for sluice.UsageStore.
package storetest
