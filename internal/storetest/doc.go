// Package storetest holds the conformance suites that every implementation
// of sluice's store interfaces must pass: RunQuotaStore for sluice.QuotaStore,
// RunAccountService for sluice.AccountService and RunUsageStore for
// sluice.UsageStore.
package storetest
