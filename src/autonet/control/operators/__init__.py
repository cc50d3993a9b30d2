"""The built-in operators, one module per kind; registered by autonet.control.builtin."""
