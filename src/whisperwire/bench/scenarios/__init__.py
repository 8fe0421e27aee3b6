"""The scenarios, one module each: `accuracy`, `noise`, `capacity`, `long_session`, and the
in-process `cost_model`; `common` holds what their results share."""
