// Replays a golden `layernorm` op through rq_layernorm_row (integer statistics, exact isqrt, rounding
// divider, fused per-channel requantizer), one token at a time.
// Plusargs: +x= (residual [.., C]) +mult= +shift= +offset= (per-channel [C]) +out= (codes [.., C])
`timescale 1ns/1ps
module tb_layernorm;
    parameter integer T = 1;                // images x tokens
    parameter integer C = 1;
    parameter integer F = 16;
    parameter integer DIV_ITER = 48;
    parameter integer IN_W = 16, IN_S = 1;
    parameter integer OUT_W = 8, OUT_S = 0;
    parameter integer M_W = 32, M_S = 1;
    parameter integer SH_W = 8, SH_S = 0;
    parameter integer OFF_W = 64, OFF_S = 1;
    parameter [63:0] EPS_Q = 0;
    parameter signed [31:0] ZP = 0;
    parameter signed [31:0] OUT_MIN = 0;
    parameter signed [31:0] OUT_MAX = 255;
    parameter integer MODE = 1;
    `include "tb_util.vh"

    reg [IN_W-1:0]  x_mem   [0:T*C-1];
    reg [OUT_W-1:0] out_mem [0:T*C-1];
    reg [M_W-1:0]   m_mem   [0:C-1];
    reg [SH_W-1:0]  sh_mem  [0:C-1];
    reg [OFF_W-1:0] off_mem [0:C-1];

    reg clk = 0, rst = 1, prm_we = 0, in_valid = 0;
    reg [15:0] prm_addr;
    reg signed [31:0] prm_mult;
    reg [5:0] prm_shift;
    reg signed [63:0] prm_offset;
    reg signed [31:0] x;
    wire out_valid, busy;
    wire signed [31:0] y, norm;
    always #5 clk = ~clk;

    rq_layernorm_row #(.CMAX(C), .F(F), .DIV_ITER(DIV_ITER)) dut (.clk(clk), .rst(rst), .prm_we(prm_we),
        .prm_addr(prm_addr), .prm_mult(prm_mult), .prm_shift(prm_shift), .prm_offset(prm_offset),
        .eps_q(EPS_Q), .zp(ZP), .out_min(OUT_MIN), .out_max(OUT_MAX), .mode(MODE[1:0]), .c_len(C[15:0]),
        .in_valid(in_valid), .x(x), .out_valid(out_valid), .y(y), .norm_out(norm), .busy(busy));

    integer t, c, o;
    reg signed [63:0] want;
    initial begin
        n_checked = 0; n_bad = 0; o = 0;
        if (!$value$plusargs("x=%s", fname)) $fatal(1, "missing +x=");
        $readmemh(fname, x_mem);
        if (!$value$plusargs("out=%s", fname)) $fatal(1, "missing +out=");
        $readmemh(fname, out_mem);
        if (!$value$plusargs("mult=%s", fname)) $fatal(1, "missing +mult=");
        $readmemh(fname, m_mem);
        if (!$value$plusargs("shift=%s", fname)) $fatal(1, "missing +shift=");
        $readmemh(fname, sh_mem);
        if (!$value$plusargs("offset=%s", fname)) $fatal(1, "missing +offset=");
        $readmemh(fname, off_mem);
        if ((^x_mem[T*C-1] === 1'bx) || (^out_mem[T*C-1] === 1'bx) || (^m_mem[C-1] === 1'bx) ||
            (^off_mem[C-1] === 1'bx))
            $fatal(1, "a golden file is shorter than the manifest says");
        repeat (2) @(negedge clk);
        rst = 0;
        for (c = 0; c < C; c = c + 1) begin
            prm_we = 1; prm_addr = c;
            prm_mult = sx64(m_mem[c], M_W, M_S);
            prm_shift = sx64(sh_mem[c], SH_W, SH_S);
            prm_offset = sx64(off_mem[c], OFF_W, OFF_S);
            @(negedge clk);
        end
        prm_we = 0;
        for (t = 0; t < T; t = t + 1) begin
            for (c = 0; c < C; c = c + 1) begin
                in_valid = 1;
                x = sx64(x_mem[t * C + c], IN_W, IN_S);
                @(negedge clk);
            end
            in_valid = 0;
            while (o < (t + 1) * C) @(negedge clk);
        end
        report_and_exit("layernorm");
    end
    always @(posedge clk) begin
        if (out_valid) begin
            want = sx64(out_mem[o], OUT_W, OUT_S);
            if ($signed(y) != want) begin
                if (n_bad < 10) $display("MISMATCH layernorm element %0d: rtl %0d golden %0d (norm %0d)", o, y, want, norm);
                n_bad = n_bad + 1;
            end
            n_checked = n_checked + 1;
            o = o + 1;
        end
    end
endmodule
