package quota

// SetMode changes the mode of a Limiter in use, for a configuration reload:
// the decisions that start after it follow m. It is safe for concurrent use
// with decisions; once it is called the Mode field is no longer read.
func (l *Limiter) SetMode(m Mode) { l.mode.Store(int64(m) + 1) }

// currentMode is the mode of SetMode, or else the Mode field.
func (l *Limiter) currentMode() Mode {
	if v := l.mode.Load(); v != 0 {
		return Mode(v - 1)
	}
	return l.Mode
}
