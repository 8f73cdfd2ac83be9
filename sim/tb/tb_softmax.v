// Replays a golden `softmax` op through rq_softmax_row, one row at a time; the exp2 LUT is the IR
// constant's .hex file, written into the unit's table before the first row.
// Plusargs: +x= (logits [.., N], int32) +lut= (2^F entries) +out= (Q0.P probabilities)
`timescale 1ns/1ps
module tb_softmax;
    parameter integer ROWS = 1;
    parameter integer N = 1;
    parameter integer F = 10;
    parameter integer P = 16;
    parameter integer DIV_ITER = 39;
    parameter integer IN_W = 32, IN_S = 1;
    parameter integer OUT_W = 17, OUT_S = 0;
    parameter integer LUT_W = 32;
    parameter [31:0] MULT = 0;
    parameter integer SHIFT = 0;
    parameter integer MODE = 1;
    `include "tb_util.vh"

    localparam integer NL = 1 << F;
    reg [IN_W-1:0]  x_mem   [0:ROWS*N-1];
    reg [OUT_W-1:0] out_mem [0:ROWS*N-1];
    reg [LUT_W-1:0] lut_mem [0:NL-1];

    reg clk = 0, rst = 1, lut_we = 0, in_valid = 0;
    reg [F-1:0] lut_addr;
    reg [31:0] lut_data;
    reg signed [31:0] x;
    wire out_valid, busy;
    wire [31:0] p_out;
    always #5 clk = ~clk;

    rq_softmax_row #(.NMAX(N), .F(F), .P(P), .DIV_ITER(DIV_ITER)) dut (.clk(clk), .rst(rst), .lut_we(lut_we),
        .lut_addr(lut_addr), .lut_data(lut_data), .mult(MULT), .shift(SHIFT[5:0]), .mode(MODE[1:0]),
        .n_len(N[15:0]), .in_valid(in_valid), .x(x), .out_valid(out_valid), .p_out(p_out), .busy(busy));

    integer r, j, o;
    reg signed [63:0] want;
    initial begin
        n_checked = 0; n_bad = 0; o = 0;
        if (!$value$plusargs("x=%s", fname)) $fatal(1, "missing +x=");
        $readmemh(fname, x_mem);
        if (!$value$plusargs("out=%s", fname)) $fatal(1, "missing +out=");
        $readmemh(fname, out_mem);
        if (!$value$plusargs("lut=%s", fname)) $fatal(1, "missing +lut=");
        $readmemh(fname, lut_mem);
        if ((^x_mem[ROWS*N-1] === 1'bx) || (^out_mem[ROWS*N-1] === 1'bx) || (^lut_mem[NL-1] === 1'bx))
            $fatal(1, "a golden file is shorter than the manifest says");
        repeat (2) @(negedge clk);
        rst = 0;
        for (j = 0; j < NL; j = j + 1) begin
            lut_we = 1; lut_addr = j; lut_data = lut_mem[j];
            @(negedge clk);
        end
        lut_we = 0;
        for (r = 0; r < ROWS; r = r + 1) begin
            for (j = 0; j < N; j = j + 1) begin
                in_valid = 1;
                x = sx64(x_mem[r * N + j], IN_W, IN_S);
                @(negedge clk);
            end
            in_valid = 0;
            while (o < (r + 1) * N) @(negedge clk);
        end
        report_and_exit("softmax");
    end
    always @(posedge clk) begin
        if (out_valid) begin
            want = sx64(out_mem[o], OUT_W, OUT_S);
            if ($signed({32'd0, p_out}) != want) begin
                if (n_bad < 10) $display("MISMATCH softmax element %0d: rtl %0d golden %0d", o, p_out, want);
                n_bad = n_bad + 1;
            end
            n_checked = n_checked + 1;
            o = o + 1;
        end
    end
endmodule
