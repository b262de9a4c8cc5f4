"""Cloud providers: each turns one job id into a `JobSnapshot` over HTTP, or a `ProviderError`."""
