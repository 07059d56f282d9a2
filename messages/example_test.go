package messages_test

import (
	"errors"
	"fmt"

	"github.com/reqcount/reqcount/messages"
)

func ExampleAppendJSON() {
	// One buffer, reused for every message: no allocation once it has grown.
	buf := make([]byte, 0, 128)
	buf = messages.AppendJSON(buf[:0], messages.RequestCount{Count: 3, Svc: "checkout", Namespace: "shop"})
	fmt.Println(string(buf))
	// Output: {"count":3,"svc":"checkout","namespace":"shop"}
}

func ExampleAppendFields() {
	// The same bytes, from fields kept apart.
	fmt.Println(string(messages.AppendFields(nil, 3, "checkout", "shop")))
	// Output: {"count":3,"svc":"checkout","namespace":"shop"}
}

func ExampleAppendBatchJSON() {
	batch := []messages.RequestCount{
		{Count: 3, Svc: "checkout", Namespace: "shop"},
		{Count: 1, Svc: "cart", Namespace: "shop"},
	}
	fmt.Println(string(messages.AppendBatchJSON(nil, batch)))
	// Output: [{"count":3,"svc":"checkout","namespace":"shop"},{"count":1,"svc":"cart","namespace":"shop"}]
}

func ExampleDecode() {
	// A single object, as the operator receives it.
	ms, err := messages.Decode([]byte(`{"count":3,"svc":"checkout","namespace":"shop"}`))
	fmt.Println(ms, err)

	// A batch, as a batch collector receives it.
	ms, err = messages.Decode([]byte(`[{"count":3,"svc":"checkout","namespace":"shop"},{"count":1,"svc":"cart","namespace":"shop"}]`))
	fmt.Println(ms, err)

	// Every message is validated; errors say where and what.
	_, err = messages.Decode([]byte(`[{"count":1,"svc":"cart","namespace":"shop"},{"count":1,"svc":"Bad_Name","namespace":"shop"}]`))
	fmt.Println(err)
	var fe *messages.FieldError
	if errors.As(err, &fe) {
		fmt.Println(fe.Index, fe.Field)
	}
	// Output:
	// [{3 checkout shop}] <nil>
	// [{3 checkout shop} {1 cart shop}] <nil>
	// messages: [1].svc: "Bad_Name" is not a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)
	// 1 svc
}

func ExampleRequestCount_Validate() {
	fmt.Println(messages.RequestCount{Count: 1, Svc: "checkout", Namespace: "shop"}.Validate())
	fmt.Println(messages.RequestCount{Count: 0, Svc: "checkout", Namespace: "shop"}.Validate())
	// Output:
	// <nil>
	// messages: count: 0 is less than 1
}
