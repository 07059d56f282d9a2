package flush

// Draining reports whether Drain was called (for the tests).
func (f *Flusher) Draining() bool { return f.draining }
