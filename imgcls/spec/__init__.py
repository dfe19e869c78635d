"""The experiment spec: typed, validated sections loaded from YAML."""

from imgcls.spec.load import dump_spec, load_spec, spec_from_dict
from imgcls.spec.schema import Spec

__all__ = ["Spec", "dump_spec", "load_spec", "spec_from_dict"]
