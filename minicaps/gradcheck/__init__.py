"""Finite-difference gradient checks for any op pair (check_op) and for whole models
(check_model on sampled entries, directional_check along directions, check_network for
both with what each covered), in float64.

    from minicaps.gradcheck import check_network, network_under_check
    net, x, y = network_under_check(CapsNetConfig(...))
    for row in check_network(net, x, y): print(row.name, row.errors)

differences.py: the stencil and check_op; models.py: networks, their kinks and directions;
subject.py: the network and the function a check differentiates.
"""
from .differences import H, check_op, derivative, rel_error
from .models import (NothingMeasured, ParameterCheck, check_model, check_network,
                     directional_check)
from .subject import network_under_check, scale_to_operating_point

__all__ = ["H", "check_op", "derivative", "rel_error", "NothingMeasured", "ParameterCheck",
           "check_model", "check_network", "directional_check", "network_under_check",
           "scale_to_operating_point"]
