package config_test

import (
	"errors"
	"fmt"

	"github.com/reqcount/reqcount/filter/config"
)

func ExampleParse() {
	// Only cluster is required; everything else has a default.
	c, err := config.Parse([]byte(`{"cluster": "elasti-operator", "mode": "batch", "flush_interval": "500ms"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Cluster, c.Authority, c.Path)
	fmt.Println(c.Mode, c.FlushInterval, c.Timeout, c.KeySource, c.MaxKeys)

	// A refused configuration names the field at fault.
	_, err = config.Parse([]byte(`{"cluster": "elasti-operator", "timeout": "1500us"}`))
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Println(ce.Field)
	}
	fmt.Println(err)
	// Output:
	// elasti-operator elasti-operator /informer/incoming-request
	// batch 500ms 2s authority 10000
	// timeout
	// configuration: field "timeout": "1500us" must be a whole number of milliseconds
}
