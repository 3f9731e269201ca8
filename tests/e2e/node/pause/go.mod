module reconciler.test/e2e/node/pause

go 1.26.0
