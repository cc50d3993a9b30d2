"""The built-in operators, one module per kind. A module's handlers are module-level
functions collected in its `operators` set; autonet.control.builtin registers them."""
