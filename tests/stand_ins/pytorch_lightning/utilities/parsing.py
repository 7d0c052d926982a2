class AttributeDict(dict):
    """pytorch_lightning.utilities.parsing.AttributeDict: a dict whose items are also
    attributes; later Lightning versions save `hyper_parameters` as one."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(key) from error

    def __setattr__(self, key, value):
        self[key] = value
