"""qstream.convert exposes what `qstream convert` does: presets, per-role overrides,
rotation, calibration (imatrix), GPTQ; silent unless asked for progress."""

import pytest

import qstream


def types(path):
    return qstream.info(path)["quant_types"]


def test_convert_is_silent_by_default(tiny_dir, tmp_path, capfd):
    qstream.convert(tiny_dir, tmp_path / "a.qsf", quant="8bit")
    assert capfd.readouterr().err == ""
    qstream.convert(tiny_dir, tmp_path / "b.qsf", quant="8bit", progress=True)
    assert "converting" in capfd.readouterr().err


def test_convert_presets(tiny_dir, tmp_path):
    def conv(quant):
        out = tmp_path / f"{quant}.qsf"
        qstream.convert(tiny_dir, out, quant=quant)
        return out

    n_layer = qstream.info(conv("f32"))["n_layer"]
    q4m = types(conv("q4_m"))
    # embeddings/output and ffn_down q8, every other matrix q4
    assert q4m.get("q8", 0) >= n_layer + 1 and q4m.get("q4", 0) == 6 * n_layer, q4m
    e8 = types(conv("3bit+e8"))
    assert e8.get("q3", 0) == 7 * n_layer and e8.get("q8", 0) >= 1, e8
    with pytest.raises(qstream.InvalidArgumentError):
        conv("f16+e8")


def test_convert_tensor_type_overrides_and_rotation(tiny_dir, tmp_path):
    out = tmp_path / "o.qsf"
    qstream.convert(tiny_dir, out, quant="2bit", tensor_types={"ffn_down": "8bit", "attn_v": "4bit:64"})
    t = types(out)
    assert t["q8"] == 2 and t["q4"] == 2, t
    for bad in ({"ffn_up": "4bit:48"}, {"ffn_up": "q4_m"}, {"": "8bit"}, {"ffn_up": "4bit:x"}):
        with pytest.raises(qstream.InvalidArgumentError):
            qstream.convert(tiny_dir, tmp_path / "bad.qsf", tensor_types=bad)
    assert not (tmp_path / "bad.qsf").exists()
    plain, rot = tmp_path / "p.qsf", tmp_path / "r.qsf"
    qstream.convert(tiny_dir, plain, quant="2bit")
    qstream.convert(tiny_dir, rot, quant="2bit", rotate=64)
    assert plain.read_bytes() != rot.read_bytes()
    with qstream.Model(rot) as m:  # the rotated file loads and runs
        assert len(m.generate_ids([5, 6, 7], max_tokens=3, temperature=0, stop_on_eos=False)) == 3
    with pytest.raises(qstream.InvalidArgumentError):
        qstream.convert(tiny_dir, tmp_path / "bad.qsf", rotate=3)


def test_convert_calibration_and_gptq(tiny_dir, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog while free software runs. " * 60)
    plain, cal, again = tmp_path / "plain.qsf", tmp_path / "cal.qsf", tmp_path / "again.qsf"
    im, hess = tmp_path / "calib.imatrix", tmp_path / "calib.hess"
    qstream.convert(tiny_dir, plain, quant="2bit")
    qstream.convert(tiny_dir, cal, quant="2bit", calibrate=text, imatrix=im, calib_ctx=16, calib_chunks=4)
    assert im.is_file()
    assert cal.stat().st_size == plain.stat().st_size and cal.read_bytes() != plain.read_bytes()
    # the saved statistics give the same file
    qstream.convert(tiny_dir, again, quant="2bit", imatrix=im)
    assert again.read_bytes() == cal.read_bytes()
    g1, g2 = tmp_path / "g1.qsf", tmp_path / "g2.qsf"
    qstream.convert(tiny_dir, g1, quant="2bit", calibrate=text, gptq=True, hessian=hess,
                    calib_ctx=16, calib_chunks=4)
    assert hess.is_file() and g1.read_bytes() != cal.read_bytes()
    qstream.convert(tiny_dir, g2, quant="2bit", gptq=True, gptq_act_order=True, hessian=hess)
    assert g2.is_file()
    for kw in ({"gptq": True}, {"gptq_act_order": True}, {"gptq": True, "hessian": hess, "rotate": 64},
               {"calibrate": text, "calib_ctx": 2}):
        with pytest.raises(qstream.InvalidArgumentError):
            qstream.convert(tiny_dir, tmp_path / "bad.qsf", **kw)
    with pytest.raises(qstream.QStreamFileNotFoundError):
        qstream.convert(tiny_dir, tmp_path / "bad.qsf", calibrate=tmp_path / "missing.txt")
    assert not (tmp_path / "bad.qsf").exists()
