"""The pattern tester reads what Asterisk says about a dialled number."""

from labkit.services.asterisk import dialplan


def test_dialplan_show_output_is_read_on_both_generations():
    output = ("[ Context 'outbound' created by 'pbx_config' ]\n"
              "  '_0[1-7]XXXXXXXX' => 1. Dial(SIP/0199001234@trunk,60,tr)     [extensions.conf:16]\n"
              "  '_X.' =>          1. NoOp(anything)                             [extensions.conf:17]\n\n"
              "-= 2 extensions (2 priorities) in 1 context. =-\n")
    found = dialplan.parse(output, "0199001234", "outbound")
    assert (found.extension, found.first_step, found.where, found.also) == (
        "_0[1-7]XXXXXXXX", "Dial(SIP/0199001234@trunk,60,tr)", "extensions.conf:16", ("_X.",))
    none = dialplan.parse("There is no existence of 12@outbound extension\n", "12", "outbound")
    assert none.extension is None
