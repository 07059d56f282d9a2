package merge

import (
	"errors"
	"fmt"
)

// casRetries bounds the compare-and-swap loops: another worker winning that many
// times in a row means the next tick tries again.
const casRetries = 8

// update is a compare-and-swap loop on key: it creates key with initial if it does
// not exist (when initial is not nil), then asks change for the new value (false:
// leave it) and swaps it in, reading again on a mismatch.
func update(s Store, key string, initial []byte, change func([]byte) ([]byte, bool, error)) error {
	for i := 0; i < casRetries; i++ {
		v, cas, ok, err := s.Get(key)
		if err != nil {
			return err
		}
		if !ok {
			if initial == nil {
				return nil
			}
			if _, err := Create(s, key, initial); err != nil {
				return err
			}
			continue
		}
		nv, write, err := change(v)
		if err != nil || !write {
			return err
		}
		err = s.Set(key, nv, cas)
		if !errors.Is(err, ErrCasMismatch) {
			return err
		}
	}
	return fmt.Errorf("%s: %w %d times in a row", key, ErrCasMismatch, casRetries)
}
