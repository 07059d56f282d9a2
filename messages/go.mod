module github.com/reqcount/reqcount/messages

go 1.22
