// Package storetest holds the conformance suites that every implementation
// of sluice's store interfaces must pass: RunQuotaStore for sluice.QuotaStore
// and RunAccountService for sluice.AccountService.
package storetest
