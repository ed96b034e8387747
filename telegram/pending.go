package telegram

// Pending returns the number of messages the bot has queued and not yet
// settled (sent, or failed for good), for a gauge. Safe for concurrent use.
func (b *Bot) Pending() int {
	if b.init() != nil || b.out == nil {
		return 0
	}
	return b.out.pending()
}
