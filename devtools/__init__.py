"""Development and test tools, run from the repository root; not part of the installed package.

`devtools.harness` starts and stops real servers (the dev server, the end-to-end and reliability
suites, the bench and `make demo` all use it); `devtools.devserver` is `make run`;
`devtools.demo` is `make demo`, the whole flow against the sandbox.
"""
