"""The Triton model repository this project serves: its names (`names`), its committed template
(`template`), and reading, writing and validating its model configs (`model_config`).

`names` imports nothing, so the Python-backend models import it inside the Triton container too; import
`model_config` (protobuf and tritonclient) explicitly where it is needed.
"""
